"""Pruning: fine-grained masks (unstructured, N:M, schedules, lottery tickets, pruning at
initialization) and structured channel pruning with real model surgery (criteria, Network
Slimming and its YOLO-lineage variants).
"""
