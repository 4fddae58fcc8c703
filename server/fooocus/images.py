"""Input images of Fooocus requests (specs/fooocus_api.md §9, mask rule §5).

v2 routes send images as strings: base64, with or without a `data:image/...;base64,` prefix,
or an http(s) URL. v1 routes send upload bytes. Both end as a Pillow image:
* pictures -> RGB; grayscale is expanded, transparency is composited on white;
* masks -> L (channel 0 of that RGB picture): white = repaint, black = keep, so transparent
  pixels of an RGBA mask become "repaint", as in the reference server.

URL inputs are fetched by the caller's fetcher (`fetch_url` for the synchronous readers, an
`url_fetch.UrlFetcher` for `load_image_input`), never by this module on its own. Images are
checked against a pixel limit from their header, before any pixel is decoded (decompression
bombs), and generation inputs against a minimum size. Every failure is a ValueError whose
message starts with the request field's name, for a 4xx answer that tells the client what to fix.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Callable, Optional, Union

from PIL import Image, UnidentifiedImageError

# Values the reference server reads as "no image" (Swagger UI sends the literal "string").
NO_IMAGE_STRINGS = frozenset({"", "none", "null", "string"})

# Largest input accepted: 8192 x 8192 (an SDXL pipeline works at about 1 MP; Fooocus' own upscale
# stops diffusing above 2800 px). Pillow's own bomb limit is a process-wide global: not touched.
MAX_INPUT_PIXELS = 8192 * 8192
# Smallest generation input: one latent cell of the VAE (8 px) per side.
MIN_INPUT_SIDE = 8

UrlFetcher = Callable[[str], bytes]
ImageInput = Union[str, bytes, None]


def is_no_image(value: ImageInput) -> bool:
    if value is None:
        return True
    if isinstance(value, (bytes, bytearray)):
        return len(value) == 0
    return value.strip().lower() in NO_IMAGE_STRINGS


def is_url(value: str) -> bool:
    return value.strip().lower().startswith(("http://", "https://"))


def base64_payload(text: str, field: str) -> bytes:
    """Bytes of a base64 string, accepting a data-URL prefix, line breaks, missing padding and
    the URL-safe alphabet."""
    text = text.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ValueError(f"{field}: a data URL must look like 'data:image/png;base64,<data>'")
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text.encode("ascii"))
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as error:
        raise ValueError(f"{field}: not valid base64 image data ({error})") from None


def open_image(data: bytes, field: str, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Decode image file bytes completely (a truncated file fails here, not in the pipeline);
    the size in the header is checked against `max_pixels` before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(f"{field}: the image is {width}x{height} pixels, more than the "
                                 f"{max_pixels} pixels this server accepts")
            image.load()
    except ValueError as error:
        if str(error).startswith(f"{field}: "):
            raise
        raise ValueError(f"{field}: could not decode the image ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{field}: could not decode the image ({error})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ValueError(f"{field}: the image is too large") from None
    return image


def read_image_input(
    value: ImageInput, field: str, fetch_url: Optional[UrlFetcher] = None
) -> Optional[Image.Image]:
    """The image of a request field as decoded (any mode), or None when the field is empty."""
    if is_no_image(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return open_image(bytes(value), field)
    if is_url(value):
        if fetch_url is None:
            raise ValueError(f"{field}: image URLs are not fetched by this server; send base64 data")
        try:
            data = fetch_url(value.strip())
        except Exception as error:  # the fetcher's own errors (timeouts, HTTP status) vary
            raise ValueError(f"{field}: could not fetch the image URL ({error})") from None
        return open_image(data, field)
    return open_image(base64_payload(value, field), field)


async def load_image_input(value: ImageInput, field: str, fetcher=None) -> Optional[Image.Image]:
    """`read_image_input` for the routes: URLs are fetched with `fetcher`
    (server.fooocus.url_fetch.UrlFetcher: timeout, byte cap, address rules) on the event loop."""
    if isinstance(value, str) and not is_no_image(value) and is_url(value):
        if fetcher is None:
            raise ValueError(f"{field}: image URLs are not fetched by this server; send base64 data")
        try:
            data = await fetcher.fetch(value)
        except ValueError as error:
            raise ValueError(f"{field}: {error}") from None
        return open_image(data, field)
    return read_image_input(value, field)


def check_generation_input(image: Image.Image, field: str) -> Image.Image:
    """A picture a pipeline will encode must cover at least one latent cell per side."""
    width, height = image.size
    if min(width, height) < MIN_INPUT_SIDE:
        raise ValueError(f"{field}: the image is {width}x{height} pixels; at least "
                         f"{MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} is needed")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of `image`; transparent pixels are composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_input_image(
    value: ImageInput, field: str, fetch_url: Optional[UrlFetcher] = None
) -> Optional[Image.Image]:
    """A picture input (input_image, cn_img, image) as RGB, or None when absent."""
    image = read_image_input(value, field, fetch_url)
    return None if image is None else to_rgb(image)


def decode_mask(
    value: ImageInput, field: str = "input_mask", fetch_url: Optional[UrlFetcher] = None
) -> Optional[Image.Image]:
    """A mask input as L (0..255, white = repaint), or None when absent. Not thresholded or
    resized: the inpaint pipeline does both (pixels > 127 are repainted)."""
    image = read_image_input(value, field, fetch_url)
    if image is None:
        return None
    if image.mode == "L":
        return image
    return to_rgb(image).getchannel("R")


def binarize_mask(mask: Image.Image, threshold: int = 127) -> Image.Image:
    """0/255 mask: 255 where the mask is above `threshold`."""
    return mask.convert("L").point(lambda value: 255 if value > threshold else 0)
