"""Image interrogation for Fooocus "Describe" (spec §11): BLIP photo captions and WD14 anime tags.

blip.py      Salesforce's BLIP caption checkpoint loaded into transformers' BlipForConditionalGeneration
blip_keys.py the checkpoint's key layout, its rename to transformers' layout, the shapes it implies
wd14.py      the WD14 tagger (ONNX, through onnxruntime) and its tag selection
tiny.py      tiny random models in the same file layouts (tests and the offline demo)
"""
