"""The lab: the seeds' failures rebuilt in network namespaces, watched through droptrace."""

LAB_PREFIX = "dtlab-"  # every lab namespace's name starts so; `lab down` finds them by it
