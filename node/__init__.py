"""supnet node: the program that runs at one administrative level."""
