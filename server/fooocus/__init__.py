"""Fooocus-API compatibility layer: request/response models, input images, output files.

Modules (import them directly; this package has no side effects):
* validation -- Vocabulary (runtime style/sampler/scheduler lists), validate_request,
  validation_error_response (FastAPI-shaped 422 body)
* advanced   -- AdvancedParams
* requests   -- CommonRequest and the per-route request models, enums
* forms      -- multipart form -> v1 request model
* responses  -- response models
* metadata   -- fooocus / a1111 metadata text, PNG/EXIF containers, reader
* outputs    -- OutputStore (files/<date>/<name>), Accept conversion, data URLs
* images     -- decoding of input pictures and masks
"""
