"""Generated code for the ``pulsebeam.v1`` protobuf package (see ``make proto``)."""
