"""What every layer of vtbench shares: the batch shape, the budget and its clock, a method's spec, atomic files.

The bottom layer: it imports nothing of vtbench but `vtbench.errors`, and every other layer may import it
(docs/design.md, "Layers" gives the layers).
"""
