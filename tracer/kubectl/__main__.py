from tracer.kubectl.cli import main

main()
