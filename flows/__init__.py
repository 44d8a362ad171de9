"""The Metaflow side of the project: the one FlowSpec and the guards applied to its steps."""
