"""The lab: the seeds' failures rebuilt in network namespaces, watched through droptrace."""
