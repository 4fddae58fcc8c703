"""ComfyUI's `comfy_extras.nodes_*` modules, for the core nodes we have.

Each module holds the ComfyUI class names ComfyUI keeps there; a name resolves to our built-in
class of that name (nodes.__getattr__), so nodes added to BUILTIN_MODULES later appear here too.
A name we have no node for raises an error naming it. `NODE_CLASS_MAPPINGS` of a module lists
the ones we have.
"""
from __future__ import annotations

from comfy_compat import not_provided

MODULES: dict[str, tuple[str, ...]] = {
    "nodes_upscale_model": ("UpscaleModelLoader", "ImageUpscaleWithModel"),
    "nodes_mask": ("LatentCompositeMasked", "ImageCompositeMasked", "MaskToImage", "ImageToMask",
                   "ImageColorToMask", "SolidMask", "InvertMask", "CropMask", "MaskComposite", "FeatherMask",
                   "GrowMask", "ThresholdMask"),
    "nodes_canny": ("Canny",),
    "nodes_clip_sdxl": ("CLIPTextEncodeSDXLRefiner", "CLIPTextEncodeSDXL"),
    "nodes_post_processing": ("ImageBlend", "ImageBlur", "ImageQuantize", "ImageSharpen",
                              "ImageScaleToTotalPixels"),
    "nodes_images": ("ImageCrop", "RepeatImageBatch", "ImageFromBatch", "ImageAddNoise", "SaveAnimatedWEBP",
                     "SaveAnimatedPNG", "ImageStitch", "ResizeAndPadImage", "GetImageSize", "ImageRotate",
                     "ImageFlip"),
    "nodes_latent": ("LatentAdd", "LatentSubtract", "LatentMultiply", "LatentInterpolate", "LatentBatch",
                     "LatentBatchSeedBehavior", "LatentApplyOperation"),
    "nodes_model_advanced": ("ModelSamplingDiscrete", "ModelSamplingContinuousEDM", "RescaleCFG"),
    "nodes_freelunch": ("FreeU", "FreeU_V2"),
    "nodes_compositing": ("PorterDuffImageComposite", "SplitImageWithAlpha", "JoinImageWithAlpha"),
}


def module_getattr(module: str):
    """The __getattr__ of comfy_extras.<module>: its ComfyUI classes, found among our nodes."""
    names = MODULES[module]

    def __getattr__(name: str):
        import nodes

        if name == "NODE_CLASS_MAPPINGS":
            found = {}
            for class_name in names:
                try:
                    found[class_name] = getattr(nodes, class_name)
                except AttributeError:
                    continue
            return found
        if name in names:
            try:
                return getattr(nodes, name)
            except AttributeError:
                raise not_provided(f"comfy_extras.{module}.{name}", "this server has no such node") from None
        if name.startswith("__"):
            raise AttributeError(name)
        raise not_provided(f"comfy_extras.{module}.{name}")

    return __getattr__
