"""An out-of-tree CRM connector, shaped as a pip package would ship one: a data-only
`settings.py` declaring its `CrmSpec`, and a `connector.py` with the factory it names."""
