"""`sizer finetune`: memory and time of fine-tuning (full, LoRA, DoRA, QLoRA) per GPU.

setup: the options as the user gives them (FinetuneSetup); params: what is trained and what is
frozen; states: gradients, optimizer states and master weights; activations: what the forward
keeps for the backward, the logits and loss, the backward's temporaries; sharding: ZeRO / FSDP /
offload, and DeepSpeed's own estimators; speed: FLOPs per token and time per step; plan: verdicts,
limits, minimum GPUs and the cheapest hardware; report: table, JSON, CSV, markdown and plot.
Only the standard library here: torch is imported by `sizer measure --finetune` alone.
"""
