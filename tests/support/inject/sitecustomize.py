"""Test-only hooks inside flow subprocesses: Twilio interception and fault injection.

Put this directory on PYTHONPATH (tests/flow_support.py does) and:

``ENRICH_TEST_FAULT=drop_annotations``
    reproduces the original job's defect: about 1 annotation in 10,000 is
    silently dropped before publishing (the completeness check must catch it).

``ENRICH_TEST_TWILIO_LOG`` set to a file:
every process of the run then answers Twilio's Messages API locally (with
``responses``) and appends each request (URL, form fields, auth user) to that
file as one JSON line. Any other HTTP request fails: tests never reach the
network. ``ENRICH_TEST_TWILIO_STATUS`` sets the HTTP status to answer (default 201).
"""
import os

_LOG = os.environ.get("ENRICH_TEST_TWILIO_LOG")

if os.environ.get("ENRICH_TEST_FAULT") == "drop_annotations":
    from enrich.store.sqlite import enrichment as _enrichment

    _original_annotate_sql = _enrichment._annotate_sql

    def _lossy_annotate_sql(scope):
        # the annotations are derived in SQL: drop a random 1 in 10,000 of them there
        return _original_annotate_sql(scope).replace(" ORDER BY id", " AND abs(random()) % 10000 != 0 ORDER BY id")

    _enrichment._annotate_sql = _lossy_annotate_sql

if _LOG:
    import base64
    import json
    import re
    from urllib.parse import parse_qs

    import responses

    def _answer(request):
        fields = {k: v[0] for k, v in parse_qs(request.body or "").items()}
        auth = request.headers.get("Authorization", "")
        user = base64.b64decode(auth.split(" ", 1)[1]).decode().split(":", 1)[0] if " " in auth else ""
        with open(_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({"url": request.url, "fields": fields, "auth_user": user}) + "\n")
        status = int(os.environ.get("ENRICH_TEST_TWILIO_STATUS", "201"))
        if status >= 400:
            body = {"code": 20003, "message": "Authenticate", "status": status}
        else:
            body = {"sid": "SM" + "0" * 32, "status": "queued", "to": fields.get("To"),
                    "from": fields.get("From"), "body": fields.get("Body")}
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    _MOCK = responses.RequestsMock(assert_all_requests_are_fired=False)
    _MOCK.add_callback("POST", re.compile(r"https://api\.twilio\.com/2010-04-01/Accounts/[^/]+/Messages\.json"),
                       callback=_answer)
    _MOCK.start()
