# Set-up and entry points. `make demo` and `make test` work on a fresh machine (README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ROS_PYPI := ros-rclpy ros-sensor-msgs ros-std-msgs ros-std-srvs ros-geometry-msgs ros-diagnostic-msgs ros-visualization-msgs ros-rmw-fastrtps-cpp \
  colcon-core colcon-ros colcon-python-setup-py colcon-package-information colcon-recursive-crawl ros-ament-package

.PHONY: bench-ros setup demo test lint bench clean labextension notebooks

setup: $(STAMP)

$(STAMP): pyproject.toml ros2_ws/src/ad_inspect/setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# ROS 2 (Kilted) from PyPI for the node tests, and the ad_inspect package itself
	$(PY) -m pip install --quiet $(ROS_PYPI) || echo "ROS 2 packages unavailable from PyPI: the ROS node tests will skip"
	$(PY) -m pip install --quiet --no-deps -e ros2_ws/src/ad_inspect
	# editable installs skip the wheel's data files: link the prebuilt JupyterLab extension instead
	# (with jupyter-builder where JupyterLab ships it: there `jupyter labextension develop` is deprecated)
	if [ -x $(VENV)/bin/jupyter-builder ]; then LINK="$(VENV)/bin/jupyter-builder develop"; \
	else LINK="$(VENV)/bin/jupyter labextension develop"; fi; \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $$LINK --overwrite . > /dev/null
	touch $(STAMP)

demo: setup
	$(VENV)/bin/ad-core demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest

bench: setup
	$(PY) bench/bench_patchcore.py
	$(PY) bench/bench_latency.py
	$(PY) bench/bench_startup.py

bench-ros: setup  # the ROS 2 node against direct calls, and the transport floor under it
	FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA $(PY) bench/bench_ros_echo.py
	for m in padim patchcore efficientad; do FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA $(PY) bench/bench_ros_node.py --model $$m; done

labextension: setup  # rebuild jupyter_ext/labextension from jupyter_ext/labextension_src (needs npm)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH jupyter_ext/labextension_src/build.sh

notebooks: setup  # regenerate notebooks/*.ipynb from notebooks/make_notebooks.py
	$(PY) notebooks/make_notebooks.py

clean:
	rm -rf $(VENV) data models
