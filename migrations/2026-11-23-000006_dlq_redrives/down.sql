DROP TABLE dlq_redrives;
