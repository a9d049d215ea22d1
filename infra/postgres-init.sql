-- A second database on the same server for MLflow's backend store (the job store and Optuna use "prunehive").
CREATE DATABASE mlflow OWNER prunehive;
