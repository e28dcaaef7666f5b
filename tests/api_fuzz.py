"""Property-based requests generated from a running service's own OpenAPI schema (schemathesis).

`fuzz(base_url, seconds)` sends, for every operation in `/openapi.json`, cases that
fit the schema and cases that break it (schemathesis' positive and negative
modes), within a time budget, and checks every response: no 5xx, and every 4xx
is JSON `{"error": "<message>"}`. Used against `keras_vae.serving.server` and the Ray
Serve app alike.
"""

import collections
import json
import time

import hypothesis
import requests
import schemathesis
from schemathesis import GenerationMode


class _OutOfTime(Exception):
    """Stops Hypothesis when an operation's share of the time budget is spent."""


def check_response(case, response):
    """Raises AssertionError unless the response is a success or a JSON 4xx with an error message."""
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.content[:300]!r}"
    assert response.status_code < 500, f"server error for {case.body!r}: {where}"
    if response.status_code >= 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            raise AssertionError(f"a 4xx without a JSON body: {where}") from None
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], where


def fuzz(base_url, seconds, known_path_parameters=None, examples_per_body=400, examples_per_path=25):
    """Fuzzes every operation of the service for about `seconds`; returns a Counter of statuses.

    `known_path_parameters` (e.g. {"name": "vae_decoder", "version": "1"}) are also
    used as they are, so that the bodies of /v2/models/{name}/... get past the 404.
    Operations with a request body get up to `examples_per_body` cases per mode, and
    run last, to use the time the others leave; the rest get `examples_per_path`.
    Raises AssertionError (with the failing request) on the first bad response.
    """
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    runs = []
    for operation in operations:
        names = {parameter.name for parameter in operation.path_parameters}
        known = {k: v for k, v in (known_path_parameters or {}).items() if k in names}
        for mode in GenerationMode:
            runs.append((operation, mode, None))
            if known:
                runs.append((operation, mode, known))
    runs.sort(key=lambda run: len(run[0].body) > 0)
    statuses = collections.Counter()
    session = requests.Session()
    started = time.monotonic()
    for index, (operation, mode, path_parameters) in enumerate(runs):
        # An equal share of what is left of the budget for each (operation, mode).
        deadline = time.monotonic() + (seconds - (time.monotonic() - started)) / (len(runs) - index)
        has_body = len(operation.body) > 0

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode,
                                                     path_parameters=path_parameters))
        @hypothesis.settings(max_examples=examples_per_body if has_body else examples_per_path,
                             deadline=None, database=None,
                             derandomize=True, suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        def send(case):
            if time.monotonic() > deadline:
                raise _OutOfTime
            response = case.call(base_url=base_url, session=session, timeout=30)
            statuses[response.status_code] += 1
            check_response(case, response)

        try:
            send()
        except _OutOfTime:
            pass
        except hypothesis.errors.Unsatisfiable:
            pass  # nothing to break: e.g. the negative mode of a route without inputs
    return statuses
