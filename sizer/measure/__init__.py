"""`sizer measure`: load a model the way users run it, profile memory and speed, compare with sizer.

torch, transformers and bitsandbytes are imported inside the functions here, never at module import,
so the calculator path stays light.

What is measured, per point (model, precision, context length, batch size):
- weights: parameters (each storage once: tied tensors count once) plus the quantization statistics
  bitsandbytes keeps beside them (int8 row scales SCB; 4-bit absmax, code and nested statistics, as
  serialized), counted as loaded, before the first forward (bitsandbytes' CPU backend then repacks
  4-bit weights for its kernel); buffers (rotary tables) are counted beside, not inside;
- KV cache: the bytes of the key and value tensors the cache object holds after the prefill;
- peak: on CUDA, torch's max_memory_allocated during the prefill (and separately the decode), the
  reserved peak, and the process's device memory from NVML (CUDA context included). On CPU, the
  counted weight bytes plus the peak of live tensor bytes torch allocated during the prefill (from
  the profiler's allocation events: deterministic, the CPU analogue of max_memory_allocated; see
  `counted_allocations` and `range_peaks`), and, as the process figure, the weights plus the growth of the resident set (VmHWM, reset through
  /proc/self/clear_refs after malloc_trim), which also holds glibc's and libraries' caching and
  varies by tens of MiB between runs.
- decode peak: absolute on both devices (weights, cache, the step's tensors). On CPU the prefill
  and the first decode step are one profile (`CpuTrace`): the profiler records no free of a block
  allocated before it began, and each layer's cache update frees the prefill's tensors.
- time: the prefill forward (the last position's logits, as generate() computes them) and
  `new_tokens` greedy decode steps, each next token taken as generate() takes it (a float32 copy of
  the last logits, then argmax). On CPU the decode's peak is profiled on its first step only,
  and the speed and resident set are taken on the other steps, unprofiled: the profiler's event
  buffers grow with every operator (on GPTQ's op-heavy reference path, an 8-layer model of width
  2048 measured 6.1 GiB of resident growth over 16 profiled steps, under 0.2 GiB unprofiled). The
  resident set is read before a profile is processed.
"""
