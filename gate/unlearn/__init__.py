"""Unlearning: make a model forget the secrets it memorized (design §5).

losses.py (pure maths), data.py (forget and retain windows), methods.py (GA, CU,
CodeEraser, found by name), reference.py (p0 as cached log-probs or a frozen copy),
trainer.py (the loop and its stopping rule), erase.py (model folder in, remediated
model folder and remediation.json out).
"""
