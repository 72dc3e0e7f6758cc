"""The OS-facing helpers every stage uses: namespaces, sysctls, routes, conntrack, interfaces,
the kernel's symbols and reasons, and the pre-flight checks. They read; they never decide."""
