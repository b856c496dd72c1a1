"""What crosses the wire, as typed data: the events we publish, the command bodies we read
(magnet links among them), and the strict structuring that turns untrusted input into attrs
classes. Pure: no I/O, and nothing here imports an adapter."""
