"""Knowledge distillation of a student from the teacher (the `distill` pass).

pass_.py      DistillConfig, distill(), DistillPass; the losses and feature taps it trains with live in
              squeeze/train/, because prune recovery and QAT train with the same objective
"""
