"""Face alignment against OpenCV's estimateAffinePartial2D + warpAffine and a closed-form similarity."""
import cv2
import numpy as np

from models.face_align import BORDER_RGB, FFHQ_TEMPLATE_512, align_face, face_transform


def _landmarks_of(matrix_to_template: np.ndarray) -> np.ndarray:
    """Landmarks an image must have for `matrix_to_template` (2x3) to be the exact answer."""
    full = np.vstack([matrix_to_template, [0, 0, 1]])
    inverse = np.linalg.inv(full)
    points = np.hstack([FFHQ_TEMPLATE_512, np.ones((5, 1), np.float32)])
    return (points @ inverse.T)[:, :2].astype(np.float32)


def test_transform_recovers_a_known_similarity():
    angle, scale = np.deg2rad(17.0), 1.7
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    truth = np.hstack([rotation, [[40.0], [-25.0]]])
    np.testing.assert_allclose(face_transform(_landmarks_of(truth)), truth, atol=1e-3)


def test_align_equals_opencv_pipeline_with_grey_border():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    landmarks = np.array([[90, 120], [160, 118], [127, 160], [98, 200], [158, 199]], np.float32)
    landmarks += rng.normal(0, 1.5, landmarks.shape).astype(np.float32)
    matrix = cv2.estimateAffinePartial2D(landmarks, FFHQ_TEMPLATE_512, method=cv2.LMEDS)[0]
    expected = cv2.warpAffine(image, matrix, (512, 512), borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(132, 133, 135))
    out = align_face(image, landmarks)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    assert tuple(out[0, 0]) == BORDER_RGB == (132, 133, 135)  # a small face: the corners are border
