-- Run once by the postgres image on a new data volume: MLflow's backend store beside Dagster's.
CREATE DATABASE mlflow;
