# cnnc in a container: the package with its dependencies, `cnnc` as the entry point.
#
#   docker build -t cnnc .                                      # CUDA torch from PyPI (GPU nodes)
#   docker build -t cnnc --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .   # CPU-only, ~5 GB smaller
#   docker run --rm -v $PWD/runs:/app/runs cnnc submit configs/demo.yaml
#   apptainer build cnnc.sif docker-daemon://cnnc:latest        # SLURM clusters without Docker
#   apptainer exec --bind /shared cnnc.sif cnnc submit configs/sweep.yaml --set data.root=/shared/mini-imagenet
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CNNC_CACHE=/app/.cache/cnnc MPLCONFIGDIR=/tmp/matplotlib

# A user without privileges runs everything; /app is theirs so runs/ and the data cache can be written.
RUN useradd --create-home --uid 1000 cnnc
WORKDIR /app

# pip builds the package from its code, so a change to cnn_cluster/ reinstalls the dependencies too
# (a layer cache of them would need a requirements file apart from pyproject.toml).
COPY pyproject.toml README.md ./
COPY cnn_cluster/ cnn_cluster/
RUN pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} . \
    && rm -rf build cnn_cluster.egg-info
# jobs/: the Ray Jobs entry point cnnc submit --address ships; configs/ and slurm/: ready to use.
COPY jobs/ jobs/
COPY configs/ configs/
COPY slurm/ slurm/
RUN chown -R cnnc:cnnc /app

USER cnnc
# 8265: the Ray dashboard, when one runs here (bind it to 127.0.0.1 unless the network is private).
EXPOSE 8265
ENTRYPOINT ["cnnc"]
CMD ["--help"]
