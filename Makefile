# The two commands a newcomer needs: `make run` and `make test`. Both create .venv when it
# is missing and (re)install the project only when pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UI_PORT ?= 5000
SERVE_PORT ?= 5001
# make serve: one worker uses both cores of a 2-core machine (more would compete for them), and a
# request may take 60 s: 4 clients sending phone photos waited up to ~26 s here (benchmarks/serve_load.py)
SERVE_WORKERS ?= 1
SERVE_TIMEOUT ?= 60
VIZ_PORT ?= 4141
MODEL ?= models:/acne-detector/latest
TRACKING_URI := sqlite:///data/mlflow/mlflow.db
# This project holds medical photographs: no library phones home (see README, "Privacy").
export DO_NOT_TRACK := 1
export KEDRO_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export YOLO_OFFLINE := 1

.PHONY: help docs figures run test ui viz serve server server-stop server-user predict review reviewed labelstudio labelstudio-install bench bench-quick bench-gpu bench-serve install clean-outputs ray-head ray-worker

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

# make run installs the runtime only; each target that needs an extra installs it once (a stamp per extra).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[test,onnx,team,viz,docs,ray]"
	touch $@

$(VENV)/.installed-%: $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[$*]"
	touch $@

help:  ## this list
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

install:  ## create .venv and install the project (runtime only)
install: $(VENV)/.installed

run: install  ## the whole pipeline (kedro run): data, preview, train, eval, register
	$(BIN)/kedro run

test: $(VENV)/.installed-test  ## linters and the test suite (installs every extra the suite needs)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest

# Opens on the experiment's runs in MLflow's model-training view (workflowType=machine_learning).
ui: install  ## the MLflow UI on 127.0.0.1:5000 (UI_PORT), opened on the runs
	@mkdir -p data/mlflow
	@echo "MLflow UI: $$($(BIN)/python -m acne_detection.ops.tracking_ui $(TRACKING_URI) http://127.0.0.1:$(UI_PORT))  (Ctrl-C to stop)"
	$(BIN)/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port $(UI_PORT)

# The pipelines' DAG in kedro-viz on http://127.0.0.1:$(VIZ_PORT)
viz: $(VENV)/.installed-viz  ## the pipelines' DAG in kedro-viz on 127.0.0.1:4141 (VIZ_PORT)
	@echo "kedro-viz: http://127.0.0.1:$(VIZ_PORT)  (Ctrl-C to stop)"
	$(BIN)/kedro viz run --host 127.0.0.1 --port $(VIZ_PORT) --no-browser

# A team tracking server: PostgreSQL (a local cluster under data/team/, or MLFLOW_BACKEND_STORE_URI)
# + proxied artifacts + logins, on 127.0.0.1:5050. Runs log to it with `kedro run --env team`. README, "Scaling out".
server: $(VENV)/.installed-team  ## the team tracking server (PostgreSQL, logins) on 127.0.0.1:5050
	$(BIN)/python -m acne_detection.ops.team_server start

# A login on the running team server: make server-user NAME=alice ROLE=trainer (viewer, trainer, admin).
# The password is written to data/team/secrets/users/NAME.password (mode 600), never printed.
server-user: $(VENV)/.installed-team  ## a login on the team server: NAME=alice ROLE=trainer
	@test -n "$(NAME)" || (echo "usage: make server-user NAME=alice ROLE=trainer   (ROLE: viewer, trainer, admin)"; exit 2)
	$(BIN)/python -m acne_detection.ops.team_server user $(NAME) $(or $(ROLE),viewer)

server-stop: $(VENV)/.installed-team  ## stop the team tracking server
	$(BIN)/python -m acne_detection.ops.team_server stop

# The README's figure tables, rewritten from the measured release figures in docs/figures.json
figures: install  ## rewrite the figure tables of the README and docs from docs/figures.json
	$(BIN)/python -m acne_detection.ops.release_figures render

predict: install  ## grade the photos of new_photos (kedro run --pipeline predict)
	$(BIN)/kedro run --pipeline predict

# A Ray cluster for predict and the sweep (docs/scaling-out.md): nodes listen on 127.0.0.1 unless
# RAY_HOST names this machine's address on a network you trust. Ray's token (~/.ray/auth_token) is
# made by the head; copy it to each worker machine. Runs join with RAY_ADDRESS=<head>:$(RAY_PORT).
RAY_HOST ?= 127.0.0.1
RAY_PORT ?= 6379
ray-head: $(VENV)/.installed-ray  ## a Ray head node on 127.0.0.1:6379 (RAY_HOST, RAY_PORT); Ctrl-C stops it
	$(BIN)/python -m acne_detection.framework.distributed head --host $(RAY_HOST) --port $(RAY_PORT) $(RAY_ARGS)

ray-worker: $(VENV)/.installed-ray  ## this machine joins a Ray cluster: ADDRESS=<head host>:6379 (RAY_HOST)
	@test -n "$(ADDRESS)" || (echo "usage: make ray-worker ADDRESS=<head host>:$(RAY_PORT) [RAY_HOST=<this machine's address>]"; exit 2)
	$(BIN)/python -m acne_detection.framework.distributed worker --address $(ADDRESS) --host $(RAY_HOST) $(RAY_ARGS)

# The review loop (README, "Review loop"): Label Studio on 127.0.0.1:$(LS_PORT), in its own venv
# (.venv-labelstudio, installed once); photos served read-only from under LS_PHOTOS. Ctrl-C stops it.
LS_PORT ?= 8080
LS_PHOTOS ?= data/01_raw
LS_DATABASE ?= sqlite
labelstudio: install  ## Label Studio on 127.0.0.1:8080 (LS_PORT) for the review loop
	$(BIN)/python -m acne_detection.ops.label_studio start --port $(LS_PORT) --document-root $(LS_PHOTOS) --database $(LS_DATABASE)

labelstudio-install: install  ## install Label Studio in its own venv (.venv-labelstudio), once
	$(BIN)/python -m acne_detection.ops.label_studio install

# The model pre-annotates new_photos in Label Studio (and writes a CVAT file); then, once reviewed:
review: install  ## the model pre-annotates new_photos in Label Studio
	$(BIN)/kedro run --pipeline review

# What the reviewers changed (MLflow run + data/08_reporting/review_edits.csv), the export kept for training
reviewed: install  ## what the reviewers changed, kept for training
	$(BIN)/kedro run --pipeline reviewed

# Serves the registered model over HTTP on 127.0.0.1 (the local environment: no download).
serve: install  ## serve the registered model over HTTP on 127.0.0.1:5001 (SERVE_PORT)
	@echo "Model server: POST http://127.0.0.1:$(SERVE_PORT)/invocations  (Ctrl-C to stop; see README, Serving)"
	served=$$(MLFLOW_TRACKING_URI=$(TRACKING_URI) $(BIN)/python -m acne_detection.ops.fetch_model $(MODEL) data/06_models/fetched) && \
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=$(TRACKING_URI) $(BIN)/mlflow models serve -m "$$served" --env-manager local \
		--host 127.0.0.1 --port $(SERVE_PORT) --workers $(SERVE_WORKERS) --timeout $(SERVE_TIMEOUT)

bench: $(VENV)/.installed-test  ## the benchmarks (benchmarks/RESULTS.md)
	$(BIN)/python -m benchmarks.run

# The GPU recipe (640 px, AMP, autobatch, cache in RAM) on the configured export, against plain
# yolo train + yolo val: benchmarks/RESULTS-gpu.md. Stops at once without a CUDA GPU. GPU_ARGS="--env acne04 --device 0"
bench-gpu: $(VENV)/.installed-test  ## the GPU recipe against plain yolo train (needs a CUDA GPU)
	$(BIN)/python -m benchmarks.gpu $(GPU_ARGS)

bench-quick: $(VENV)/.installed-test  ## the benchmarks at smoke sizes
	$(BIN)/python -m benchmarks.run --quick

# make serve under load: 4 clients, 200 requests of 640 px photos (every 10th bad), 20 phone photos (benchmarks/RESULTS.md)
bench-serve: $(VENV)/.installed-test  ## the served model under load
	$(BIN)/python -m benchmarks.serve_load

# Removes everything runs wrote under data/ (keeps the folder layout, and the team server's store and
# secrets under data/team/: stop it with make server-stop and remove that folder yourself to reset it).
clean-outputs:  ## remove what runs wrote under data/ (not the team server's store)
	find data \( -path data/team -o -path data/labelstudio \) -prune -o -type f ! -name .gitkeep -exec rm -f {} +

# The docs site (mkdocs.yml, docs/) on 127.0.0.1:8000; mkdocs build --strict runs in the test suite.
docs: $(VENV)/.installed-docs  ## the docs site on 127.0.0.1:8000
	$(BIN)/python -m acne_detection.ops.release_figures render
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000
