# Strongroom on the official Airflow image: the same DAGs run on the Local, Celery or Kubernetes executor.
FROM apache/airflow:3.3.2-python3.11

USER root
# pg_dump / pg_restore / pg_dumpall 15 (must be >= the source servers' major version)
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
# the restore spool (restore.spool_dir in deploy/config/strongroom.yaml): a volume mounted here starts with
# this owner and mode, so the airflow user can write it and nobody else can read it
RUN mkdir -p /var/lib/strongroom/spool && chown 50000:0 /var/lib/strongroom/spool && chmod 0700 /var/lib/strongroom/spool
USER airflow

COPY --chown=airflow:root requirements.txt requirements-lock.txt /opt/strongroom/
# the lock pins every transitive dependency (celery among them: the provider needs celery < 5.7)
RUN pip install --no-cache-dir -r /opt/strongroom/requirements.txt -c /opt/strongroom/requirements-lock.txt

COPY --chown=airflow:root pyproject.toml /opt/strongroom/
COPY --chown=airflow:root include /opt/strongroom/include
RUN pip install --no-cache-dir --no-deps /opt/strongroom

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
# Mount the real configuration here (or set STRONGROOM_CONFIG); it names connections, never credentials.
ENV STRONGROOM_CONFIG=/opt/airflow/config/strongroom.yaml \
    AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES=keys
