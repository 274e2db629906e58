"""Training-free student architecture search (DisWOT-style proxies) under target budgets.

spaces.py     typed search spaces -> student specs -> nn.Module
proxies.py    DisWOT (semantic + relation) and baseline zero-cost proxies
evolution.py  regularised evolution with tournament selection, mutation and crossover
latency.py    candidate latency through the target protocol, cached on disk
pass_.py      SearchConfig, search(), SearchPass (the pipeline pass)
"""

from squeeze.passes.search.pass_ import SearchConfig, SearchOutcome, SearchPass, search, write_outputs

__all__ = ["SearchConfig", "SearchOutcome", "SearchPass", "search", "write_outputs"]
