"""transformers' device_map="auto": which modules accelerate places on each GPU, the CPU and disk.

`from_pretrained(..., device_map="auto", max_memory=...)` (transformers 5.25,
integrations/accelerate.py `_get_device_map`) balances the memory over the GPUs
(`get_balanced_memory`) and places the modules with accelerate's `infer_auto_device_map`
(accelerate 1.16, utils/modeling.py). Both are mirrored here on a module tree built from a
ModelSpec (docs/reference/transformers-device-map.md has the source lines):

- max_memory not given: each GPU's free memory, the CPU's available RAM x 0.90 (transformers'
  get_max_memory); with one GPU, 90 % of its memory ("10% for the buffer to avoid OOM").
- several GPUs ("auto" = "balanced"): every GPU but the last is capped at the model's size / GPUs plus
  1.25 x the largest decoder layer (or largest leaf tensor).
- placement: modules in order; a module goes to the current device while it fits that device's budget
  less, on the main devices (GPU 0 and the CPU), the largest layer still to place (kept free to load an
  offloaded layer); a module that does not fit is split into its children unless it is a decoder layer
  (`_no_split_modules`), else the next device (GPUs, then "cpu", then "disk") takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

DISK, CPU = "disk", "cpu"
SINGLE_GPU_FRACTION = 0.9        # get_balanced_memory: one GPU and max_memory unset: 90 % of it
CPU_FRACTION = 0.90              # transformers get_max_memory: the CPU's available RAM x 0.90 when unset
BALANCE_BUFFER = 1.25            # get_balanced_memory: per-GPU share + 1.25 x the largest layer


@dataclass(frozen=True)
class Module:
    """A module as accelerate sees it: its name, its bytes (parameters and buffers), its children in
    order, and whether it is a layer class accelerate may not split (the model's _no_split_modules)."""

    name: str
    size: int
    children: tuple["Module", ...] = ()
    no_split: bool = False

    @property
    def leaf(self) -> bool:
        return not self.children or self.no_split


def _child(name: str, parent: str) -> str:
    return f"{parent}.{name}" if parent else name


def module_tree(spec, precision) -> Module:
    """The module tree of a decoder LM (XxxForCausalLM): `model` with embed_tokens, the decoder layers,
    norm and rotary_emb (two float32 buffers of head_dim / 2), then `lm_head`. precision: a sizer.quant
    format (bytes per tensor as transformers holds it)."""
    from dataclasses import replace

    layer_bytes = [0] * spec.n_layers
    globals_: dict[str, int] = {}
    for t in spec.tensors:
        if t.layers is None:
            owner = t.name.split(".")[0]
            if spec.tied_embeddings and t.component == "embeddings":
                globals_[owner] = globals_.get(owner, 0) + precision.tensor_bytes(t, spec)
                continue
            globals_[owner] = globals_.get(owner, 0) + precision.tensor_bytes(t, spec)
            continue
        for il in t.layers:
            layer_bytes[il] += precision.tensor_bytes(replace(t, layers=range(il, il + 1)), spec)
    layers = tuple(Module(f"model.layers.{i}", b, no_split=True) for i, b in enumerate(layer_bytes))
    head = globals_.pop("lm_head", 0)
    rotary = spec.head_dim // 2 * 4 * 2            # inv_freq and original_inv_freq, float32
    inner = [Module(f"model.{n}", b) for n, b in globals_.items() if n != "norm"]
    inner.append(Module("model.layers", sum(layer_bytes), layers))
    inner.append(Module("model.norm", globals_.get("norm", 0)))
    inner.append(Module("model.rotary_emb", rotary))
    model = Module("model", sum(m.size for m in inner), tuple(inner))
    top = (model,) + ((Module("lm_head", head),) if head and not spec.tied_embeddings else ())
    return Module("", sum(m.size for m in top), top)


def default_max_memory(gpu_free_bytes: tuple[int, ...], cpu_available_bytes: int | None) -> dict:
    """max_memory when the user gives none: each GPU's free memory and 90 % of the CPU's available RAM."""
    out: dict = {i: free for i, free in enumerate(gpu_free_bytes)}
    if cpu_available_bytes is not None:
        out[CPU] = int(cpu_available_bytes * CPU_FRACTION)
    return out


def balanced_max_memory(root: Module, max_memory: dict, user_set: bool) -> dict:
    """transformers' get_balanced_memory for device_map="auto" (low_zero False)."""
    out = dict(max_memory)
    gpus = sorted(k for k in out if isinstance(k, int) and out[k] > 0)
    if not gpus:
        return out
    if len(gpus) == 1:
        if not user_set:
            out[gpus[0]] = out[gpus[0]] * SINGLE_GPU_FRACTION
    biggest_layer = max((m.size for m in _all(root) if m.no_split), default=0)
    biggest_leaf = max((m.size for m in _all(root) if not m.children), default=0)
    per_gpu = root.size // len(gpus) + int(BALANCE_BUFFER * max(biggest_layer, biggest_leaf))
    for idx in gpus[:-1]:
        out[idx] = min(per_gpu, out[idx])
    return out


def _all(m: Module):
    yield m
    for c in m.children:
        yield from _all(c)


def _max_layer(modules: list[Module]) -> tuple[int, list[str]]:
    """accelerate get_max_layer_size: the largest module that will not be split, among `modules`."""
    size, names, todo = 0, [], list(modules)
    while todo:
        m = todo.pop(0)
        if m.leaf:
            if m.size > size:
                size, names = m.size, [m.name]
            elif m.size == size:
                names.append(m.name)
        else:
            todo = list(m.children) + todo
    return size, names


def infer_device_map(root: Module, max_memory: dict) -> dict[str, int | str]:
    """accelerate's infer_auto_device_map (no tied parameters, no fallback allocation) on the tree:
    module name -> device (GPU index, "cpu" or "disk"), cleaned as clean_device_map leaves it for
    whole sub-trees on one device is not applied (every placed module is listed)."""
    devices = sorted(k for k in max_memory if isinstance(k, int)) + [k for k in (CPU, DISK) if k in max_memory]
    if DISK not in devices:
        devices.append(DISK)
    gpus = [d for d in devices if d not in (CPU, DISK)]
    main = [gpus[0], CPU] if gpus else [CPU]
    todo = list(root.children)
    placed: dict[str, int | str] = {}
    current = 0
    used = {d: 0 for d in devices}
    max_size, max_names = _max_layer(todo)
    while todo:
        m = todo.pop(0)
        max_names = [n for n in max_names if n != m.name and not n.startswith(m.name + ".")]
        if not max_names:
            max_size, max_names = _max_layer(todo)
        device = devices[current]
        limit = None if device == DISK else max_memory[device]
        reserved = 0
        if device in main:
            limit, reserved = limit - max_size, max_size
        if limit is None or used[device] + m.size <= limit:
            used[device] += m.size
            placed[m.name] = device
            continue
        if used[device] + m.size >= limit and not m.leaf:
            todo = list(m.children) + todo
            max_size, max_names = _max_layer(todo)
            continue
        used[device] += reserved
        current += 1
        todo = [m] + todo
    return placed


def layers_by_device(placed: dict[str, int | str], root: Module) -> dict[int | str, list[int]]:
    """The decoder layers each device holds (a layer placed whole, or inside a placed parent)."""
    out: dict[int | str, list[int]] = {}
    layers = [m for m in _all(root) if m.no_split]
    for i, layer in enumerate(layers):
        device = _device_of(layer.name, placed)
        out.setdefault(device, []).append(i)
    return out


def bytes_by_device(placed: dict[str, int | str], root: Module) -> dict[int | str, int]:
    out: dict[int | str, int] = {}
    names = {m.name: m for m in _all(root)}
    for name, device in placed.items():
        out[device] = out.get(device, 0) + names[name].size
    return out


def _device_of(name: str, placed: dict) -> int | str:
    while name not in placed:
        name = name.rpartition(".")[0]
    return placed[name]
