"""The application layer: what sits on top of the stages.

The CLI (`cli`, the `*_commands` modules), the two-stage cascade across
retrieval and ranking (`cascade`, `cascade_eval`), the recommender and its
catalogue, the HTTP service and the bench. Modules here may import the
core (`tfrs_pipeline.*`, `data`) and the stages (`retrieval`, `ranking`);
nothing outside this package imports it (tests/test_architecture.py).
"""
