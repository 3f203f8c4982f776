"""The rule engine: evaluates the rulebook on new records (events) and in the periodic scan, raising alerts."""
