"""The cause hooks: how kernels without drop reasons (before 5.17) still name a drop.

One folder for the whole concern, kernel half beside user half: `cause.bpf.c` holds the
programs on the return of fib_validate_source and nf_hook_slow (linked into drop.bpf.o, whose
maps they share), `attach.py` chooses and attaches what the kernel allows (fexit, else a
kprobe pair), `facts.py` turns what they saw into evidence and a reason.
"""
