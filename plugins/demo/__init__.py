"""``polyrlm demo``: the main job offline. A real local sub-model
(SmolLM2-135M through llama.cpp's server, :mod:`.local_model`) under a
scripted root, the same long-context task on every installed backend, side
by side (:mod:`.demo`)."""
