"""FaceSwap's face alignment (spec §10.2): five landmarks (eyes, nose, mouth corners) to the FFHQ
512 template by a partial affine (rotation, uniform scale, translation) estimated with LMEDS,
then a bilinear warp to 512x512 with a constant grey border, as facexlib's FaceRestoreHelper does.

facexlib works on BGR images, so its border value (135, 133, 132) is BGR; these functions take and
return RGB arrays, hence the reversed RGB border.
"""
from __future__ import annotations

import cv2
import numpy as np

FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)
FACE_SIZE = 512
BORDER_BGR = (135, 133, 132)
BORDER_RGB = BORDER_BGR[::-1]


def face_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity matrix taking the image's 5 landmarks (x, y) onto the template."""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, dtype=np.float32).reshape(5, 2),
                                            FFHQ_TEMPLATE_512, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("no similarity transform fits these landmarks")
    return matrix


def align_face(image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(512, 512, 3) uint8 face crop of an (H, W, 3) uint8 RGB image."""
    return cv2.warpAffine(np.ascontiguousarray(image_rgb), face_transform(landmarks), (FACE_SIZE, FACE_SIZE),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB)
