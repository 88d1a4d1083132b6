"""The Annotate Anyone data flywheel: sources, store, manifests, protocol, filters, annotation, snapshots."""
