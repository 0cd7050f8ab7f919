"""The operators a model may use: every TorchScript or exported graph is checked before it runs.

The confinement (:mod:`.confine`) is what stops a hostile model; this check is the second wall
and gives a clear refusal at upload: a model whose graph calls an operator that is not a plain
tensor computation (``aten::from_file`` and ``aten::save`` open files, custom operators and
classes are native code of unknown origin) is refused, naming the operator. The list holds the
arithmetic, shape, reduction, activation, convolution, normalisation and pooling operators that
brain-age networks (the built-ins, SFCN, MONAI's DenseNet / ResNet regressors) are made of.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import ModelError

PRIM = {
    "Constant", "GetAttr", "SetAttr", "If", "Loop", "ListConstruct", "ListUnpack", "TupleConstruct",
    "TupleUnpack", "TupleIndex", "TupleSlice", "DictConstruct", "DictIndex", "RaiseException",
    "Uninitialized", "unchecked_cast", "NumToTensor", "ImplicitTensorToNum", "device", "dtype",
    "layout", "is_cuda", "requires_grad", "data", "min", "max", "abs", "isinstance", "CallMethod",
    "CallFunction", "TypeCheck", "RequiresGradCheck", "AutogradZero", "AutogradAdd", "shape",
    "name", "index", "max_pool3d", "Print", "Guard", "BailOut", "profile", "ConstantChunk",
    "ListIndex", "StringIndex", "EnumValue", "EnumName", "unchecked_unwrap_optional", "is_nested",
}
ATEN = {
    # python-level helpers of TorchScript
    "__contains__", "__derive_index", "__getitem__", "__is__", "__isnot__", "__not__", "__and__",
    "__or__", "__xor__", "__range_length", "__round_to_zero_floordiv", "__interpolate", "__upsample",
    "__upsample_bilinear", "_set_item", "append", "extend", "insert", "pop", "copy", "clear", "keys",
    "values", "items", "get", "len", "list", "dict", "format", "warn", "str", "Int", "Float", "Bool",
    "ScalarImplicit", "IntImplicit", "FloatImplicit", "dim", "size", "sizes", "numel", "stride",
    "is_floating_point", "is_contiguous", "contiguous", "item", "tolist", "type_as", "to", "cpu",
    "cuda", "detach", "detach_", "clone", "requires_grad_", "is_grad_enabled", "manual_seed",
    "floordiv", "floor", "ceil", "round", "trunc", "remainder", "fmod", "sqrt", "rsqrt", "pow",
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos",
    "atan", "atan2", "sinh", "cosh", "erf", "erfc", "sign", "neg", "reciprocal", "abs", "absolute",
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "true_divide", "floor_divide",
    "addmm", "addmv", "addcmul", "addcdiv", "mm", "bmm", "matmul", "mv", "dot", "einsum", "linear",
    "bilinear", "eq", "ne", "lt", "le", "gt", "ge", "eq_", "logical_and", "logical_or", "logical_not",
    "bitwise_and", "bitwise_or", "bitwise_not", "where", "masked_fill", "masked_fill_", "clamp",
    "clamp_", "clamp_min", "clamp_max", "clip", "min", "max", "minimum", "maximum", "amin", "amax",
    "argmax", "argmin", "sum", "mean", "prod", "std", "var", "var_mean", "std_mean", "norm",
    "frobenius_norm", "linalg_vector_norm", "cumsum", "logsumexp", "all", "any", "isfinite", "isnan",
    "nan_to_num", "sort", "topk",
    # creation and shape
    "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "empty", "empty_like", "arange",
    "linspace", "tensor", "scalar_tensor", "as_tensor", "eye", "new_zeros", "new_ones", "new_full",
    "new_empty", "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze",
    "squeeze_", "unsqueeze", "unsqueeze_", "permute", "transpose", "transpose_", "t", "expand",
    "expand_as", "repeat", "repeat_interleave", "cat", "concat", "concatenate", "stack", "split",
    "split_with_sizes", "chunk", "unbind", "narrow", "select", "slice", "index_select", "gather",
    "index", "index_put_", "masked_select", "flip", "roll", "pad", "constant_pad_nd",
    "reflection_pad3d", "replication_pad3d", "reflection_pad2d", "replication_pad2d", "movedim",
    "alias", "_unsafe_view", "lift_fresh_copy", "_to_copy", "copy_", "fill_", "zero_", "sym_size",
    "sym_numel", "sym_stride", "unfold", "tile", "broadcast_to", "float", "double", "half", "int",
    "long", "bool",
    # network layers
    "conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "batch_norm", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "native_batch_norm", "instance_norm", "group_norm",
    "native_group_norm", "layer_norm", "native_layer_norm", "local_response_norm", "relu", "relu_",
    "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu", "silu", "silu_",
    "mish", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "softplus", "softsign", "prelu",
    "_prelu_kernel", "sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "_softmax", "log_softmax",
    "_log_softmax", "threshold", "dropout", "dropout_", "feature_dropout", "feature_dropout_",
    "alpha_dropout", "feature_alpha_dropout", "native_dropout", "max_pool1d", "max_pool2d",
    "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d",
    "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "_adaptive_avg_pool3d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "upsample_nearest3d", "upsample_trilinear3d", "upsample_nearest2d", "upsample_bilinear2d",
    "interpolate", "grid_sampler", "affine_grid_generator", "scaled_dot_product_attention",
    "embedding", "kl_div", "mse_loss", "l1_loss", "smooth_l1_loss", "cross_entropy_loss", "nll_loss",
}
# file, process and serialisation operators: named in the refusal even though they are aten::
KNOWN_DANGEROUS = {"aten::from_file", "aten::save", "aten::_save", "aten::load", "aten::_load_for_mobile"}
ALLOWED = {f"prim::{k}" for k in PRIM} | {f"aten::{k}" for k in ATEN}
ALLOWED_PYTHON_TARGETS = {"_operator.getitem", "operator.getitem"}


def _graph_nodes(block: Any) -> Iterator[Any]:
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _graph_nodes(sub)


def torchscript_operators(module: Any) -> set[str]:
    """Every operator (node kind) in every method of a TorchScript module and its submodules,
    with the functions and methods they call inlined; custom classes as ``class:<name>``."""
    import torch

    kinds: set[str] = set()
    for _, sub in module.named_modules():
        for method in sub._c._method_names():
            graph = sub._c._get_method(method).graph.copy()
            torch._C._jit_pass_inline(graph)
            for node in _graph_nodes(graph):
                kinds.add(node.kind())
                for value in list(node.inputs()) + list(node.outputs()):
                    text = value.type().str()
                    if "__torch__.torch.classes" in text:
                        kinds.add(f"class:{text}")
    return kinds


def exported_operators(graph_module: Any) -> set[str]:
    """Every call target of an exported program's graph (``aten::conv3d``, ``operator.getitem``...)."""
    kinds: set[str] = set()
    for sub in graph_module.modules():
        graph = getattr(sub, "graph", None)
        if graph is None or not hasattr(graph, "nodes"):
            continue
        for node in graph.nodes:
            if node.op in ("call_function", "call_method"):
                target = node.target
                schema = getattr(target, "_schema", None)
                if schema is not None:
                    kinds.add(schema.name)
                else:
                    kinds.add(f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}")
    return kinds


def refused_operators(kinds: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The operators of ``kinds`` that are not allowed (with ``extra`` allowed too), sorted."""
    allowed = ALLOWED | ALLOWED_PYTHON_TARGETS | set(extra)
    return sorted(k for k in kinds if k not in allowed or k in KNOWN_DANGEROUS)


def check_operators(path: Any, kinds: Iterable[str], extra: Iterable[str] = ()) -> None:
    """Refuse a model whose graph uses an operator off the list.

    Raises:
        ModelError: naming the operators (at most ten) that are not allowed.
    """
    refused = refused_operators(kinds, extra)
    if not refused:
        return
    dangerous = [k for k in refused if k in KNOWN_DANGEROUS]
    why = (" (it reads or writes files)" if dangerous else
           " (not a tensor operator of the allowed list: custom operators and classes, and operators "
           "that touch files, processes or the network, are refused)")
    shown = ", ".join(refused[:10]) + (f" and {len(refused) - 10} more" if len(refused) > 10 else "")
    raise ModelError(path, f"refused: the model's graph calls {shown}{why}; it was not run")
