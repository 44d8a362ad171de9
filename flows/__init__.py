"""The Metaflow side of the project: the one FlowSpec (:mod:`flows.enrichment_flow`), the guards
applied to its steps from one place (:mod:`flows.guards`) and the run report card
(:mod:`flows.card`). Everything else is the plain library :mod:`enrich`."""
