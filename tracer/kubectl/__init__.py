"""`kubectl droptrace`: a kubectl plugin that runs droptrace in the droptrace agent of a
pod's node (or of every node) and streams what it prints."""
