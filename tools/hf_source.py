# SPDX-License-Identifier: MIT
"""Hugging Face's own modeling files, imported from a transformers source tree (4.40) without
installing transformers (which needs huggingface_hub, safetensors, tokenizers, packaging).

load_hf(src, families) loads, unchanged and not copied, the tree's
    activations.py, utils/model_parallel_utils.py, models/deprecated/_archive_maps.py,
    models/<family>/configuration_<family>.py and models/<family>/modeling_<family>.py
under a stand-in `transformers` package whose other modules are small stubs written here:
logging, docstring decorators, PretrainedConfig (keys become attributes, attribute_map
aliases, HF's defaults for the generic keys the encoders read), PreTrainedModel (no weight
initialisation: the caller loads every parameter; get_extended_attention_mask as
ModuleUtilsMixin's for an encoder, (1 − mask) · finfo.min; get_head_mask without head masks),
output classes, apply_chunking_to_forward without chunking, packaging.version.parse. Used by
tools/golden_hf.py, tools/golden_hf_t5.py, tools/golden_deberta.py and
tools/golden_hf_deberta.py.
"""

import importlib.util
import logging as py_logging
import os
import sys
import types

import torch


def _module(name, path=None, **attrs):
    m = types.ModuleType(name)
    if path is not None:
        m.__path__ = [path]
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, file)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def _stub_package(src):
    if "transformers.activations" in sys.modules:
        return

    # packaging.version.parse for activations.py's torch version checks
    def parse(v):
        out = []
        for part in v.split("+")[0].split("."):
            digits = "".join(ch for ch in part if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return tuple(out)

    _module("packaging").version = _module("packaging.version", parse=parse)

    def identity_decorator(*_a, **_k):
        return lambda f: f

    class Output(dict):
        def __init__(self, *a, **kw):
            super().__init__(kw)
            self.__dict__.update(kw)

    docs = dict(add_start_docstrings=identity_decorator,
                add_start_docstrings_to_model_forward=identity_decorator,
                add_code_sample_docstrings=identity_decorator,
                replace_return_docstrings=identity_decorator)
    _module("transformers", src)
    _module("transformers.models", os.path.join(src, "models"))
    _module("transformers.models.deprecated", os.path.join(src, "models", "deprecated"))
    _module("transformers.utils", os.path.join(src, "utils"),
            logging=types.SimpleNamespace(get_logger=py_logging.getLogger),
            DUMMY_INPUTS=[[7, 6, 0, 0, 1], [1, 2, 3, 0, 0], [0, 0, 0, 4, 5]],
            DUMMY_MASK=[[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1]],
            is_torch_fx_proxy=lambda x: False, ModelOutput=Output, **docs)
    _module("transformers.file_utils", **docs)

    class PretrainedConfig:
        """Keys become attributes (HF's PretrainedConfig does the same with unknown kwargs,
        which is how a stored dense_act_fn / is_gated_act overrides feed_forward_proj)."""
        attribute_map = {}

        def __init__(self, **kwargs):
            self.is_decoder = kwargs.pop("is_decoder", False)
            self.is_encoder_decoder = kwargs.pop("is_encoder_decoder", False)
            self.add_cross_attention = kwargs.pop("add_cross_attention", False)
            self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", True)
            self.chunk_size_feed_forward = kwargs.pop("chunk_size_feed_forward", 0)
            self.output_attentions = kwargs.pop("output_attentions", False)
            self.output_hidden_states = kwargs.pop("output_hidden_states", False)
            self.use_return_dict = kwargs.pop("return_dict", True)
            self.pruned_heads = {}
            for k, v in kwargs.items():
                setattr(self, k, v)

        def __getattr__(self, key):
            amap = type(self).attribute_map
            if key in amap:
                return getattr(self, amap[key])
            raise AttributeError(key)

    _module("transformers.configuration_utils", PretrainedConfig=PretrainedConfig)
    _module("transformers.onnx", OnnxConfig=type("OnnxConfig", (), {}),
            OnnxSeq2SeqConfigWithPast=type("OnnxSeq2SeqConfigWithPast", (), {}))
    outputs = _module("transformers.modeling_outputs")
    outputs.__getattr__ = lambda n: type(n, (Output,), {})

    class PreTrainedModel(torch.nn.Module):
        def __init__(self, config, *args, **kwargs):
            super().__init__()
            self.config = config

        def post_init(self):  # weights are set by the caller
            pass

        @property
        def dtype(self):
            return next(self.parameters()).dtype

        def warn_if_padding_and_no_attention_mask(self, input_ids, attention_mask):
            pass

        def get_extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=None):
            # ModuleUtilsMixin.get_extended_attention_mask for an encoder's [batch, len] mask
            assert not self.config.is_decoder and attention_mask.dim() == 2
            dtype = self.dtype if dtype is None else dtype
            ext = attention_mask[:, None, None, :].to(dtype=dtype)
            return (1.0 - ext) * torch.finfo(dtype).min

        def get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
            assert head_mask is None
            return [None] * num_hidden_layers

    def unused(*_a, **_k):
        raise NotImplementedError("head pruning is not used")

    def apply_chunking_to_forward(forward_fn, chunk_size, chunk_dim, *inputs):
        assert chunk_size == 0  # chunk_size_feed_forward's default: no chunking
        return forward_fn(*inputs)

    _module("transformers.modeling_utils", PreTrainedModel=PreTrainedModel,
            SequenceSummary=torch.nn.Module, find_pruneable_heads_and_indices=unused,
            prune_linear_layer=unused)
    _module("transformers.pytorch_utils", ALL_LAYERNORM_LAYERS=[],
            find_pruneable_heads_and_indices=unused, prune_linear_layer=unused,
            apply_chunking_to_forward=apply_chunking_to_forward,
            softmax_backward_data=unused)  # DeBERTa's XSoftmax backward: never called here
    _load("transformers.activations", os.path.join(src, "activations.py"))
    _load("transformers.utils.model_parallel_utils",
          os.path.join(src, "utils", "model_parallel_utils.py"))
    _load("transformers.models.deprecated._archive_maps",
          os.path.join(src, "models", "deprecated", "_archive_maps.py"))


def load_hf(src, families):
    """{family: (config class, modeling module)} for families [(dir, class prefix)], e.g.
    ("t5", "T5"), loaded from the source tree `src` (the `transformers` package directory)."""
    _stub_package(src)
    if any(fam == "esm" for fam, _ in families) and "esm_next" not in sys.modules:
        # this tree's modeling_esm.py imports esm_next (the ESM-C package, not part of
        # transformers) for an ESMC wrapper class appended to the file; EsmModel does not use it
        _module("esm_next", "")
        _module("esm_next.models", "")
        _module("esm_next.models.esmc", ESMC=None)
        _module("esm_next.utils", "")
        _module("esm_next.utils.constants", "")
        _module("esm_next.utils.constants.models", ESMC_600M="esmc_600m")
    mods = {}
    for fam, cls in families:
        _module(f"transformers.models.{fam}", os.path.join(src, "models", fam))
        conf = _load(f"transformers.models.{fam}.configuration_{fam}",
                     os.path.join(src, "models", fam, f"configuration_{fam}.py"))
        modeling = _load(f"transformers.models.{fam}.modeling_{fam}",
                         os.path.join(src, "models", fam, f"modeling_{fam}.py"))
        mods[fam] = (getattr(conf, f"{cls}Config"), modeling)
    return mods
