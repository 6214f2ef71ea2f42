"""``tinker-actors bench``: a load generator for any Tinker-compatible endpoint.

``bench sample`` sends sampling requests in a closed loop (a fixed number in flight) or an
open loop (seeded Poisson or fixed-interval arrivals) and reports vLLM ``benchmark_serving``'s
figures; ``bench train`` runs pipelined forward_backward + optim_step steps. Both drive the
load through our client (or ``--client official``), and report errors, 429s, retries and
queue waits apart from the latencies. See docs/bench.md.

Library use: ``asyncio.run(runner.run_sample(runner.Target(...), runner.SampleConfig(...)))``
returns the run; ``report.document`` turns it into the JSON document.
"""
