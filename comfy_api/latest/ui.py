"""V3 `ui`: UI payloads a node returns in NodeOutput(ui=...)."""
from __future__ import annotations


class _UIOutput:
    def as_dict(self) -> dict:
        raise NotImplementedError


class PreviewText(_UIOutput):
    def __init__(self, value: str, **kwargs) -> None:
        self.value = value

    def as_dict(self) -> dict:
        return {"text": [self.value]}


class PreviewImage(_UIOutput):
    """Saves the images into the temp folder (as PreviewImage does) and shows them."""

    def __init__(self, image, animated: bool = False, cls=None, **kwargs) -> None:
        from graph import context as graph_context
        from nodes.images import save_images

        services = graph_context.current().services
        self.values = save_images(image, "ComfyUI_temp_preview", services.temp_dir, "temp")

    def as_dict(self) -> dict:
        return {"images": self.values}
