"""The ``template`` plugin: answers built from Go templates for queries matching a regex."""
