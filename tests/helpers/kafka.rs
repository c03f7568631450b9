//! Kafka for the tests: producing records, reading a topic, the group's committed
//! offsets and the high watermarks, and a private broker an outage test may stop.

use super::*;

impl TestEnv {
    /// A producer to the local broker.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .expect("producer")
    }

    /// Produces `(key, value)` records to the source topic and waits for every delivery.
    /// Records without a partition go where their key hashes.
    pub fn produce(&self, records: &[TestRecord]) {
        produce_to(&self.brokers, &self.topic, records);
    }

    /// A consumer in the processor's group that never subscribes: it reads and writes
    /// the group's committed offsets.
    fn group_consumer(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .expect("consumer")
    }

    /// Committed offsets of the processor's group, per partition (-1: none).
    pub fn committed(&self, partitions: i32) -> Vec<i64> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self
            .group_consumer()
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(|p| match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect()
    }

    /// High watermarks of the source topic per partition.
    pub fn high_watermarks(&self, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// Commits `offset` for every partition of the source topic in the processor's
    /// group (what `kafka-consumer-groups --reset-offsets` does); the group must be idle.
    pub fn reset_group(&self, partitions: i32, offset: i64) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&self.topic, p, rdkafka::Offset::Offset(offset)).unwrap();
        }
        self.group_consumer()
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("reset committed offsets");
    }

    /// Points the processor and the assertions at another broker, with the topics made
    /// there.
    pub fn use_brokers(&mut self, brokers: &str, partitions: i32) {
        self.brokers = brokers.to_string();
        self.create_topics(partitions);
    }

    /// Reads every record of `topic` from the start: (partition, key, value).
    pub fn read_topic(&self, topic: &str, expected: usize) -> Vec<(i32, String, Option<Vec<u8>>)> {
        use rdkafka::message::Message;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}-reader-{}", self.group, uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut out = Vec::new();
        wait_until(
            &format!("{expected} records are read from {topic}"),
            Duration::from_secs(60),
            || {
                while let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    out.push((
                        m.partition(),
                        String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        m.payload().map(<[u8]>::to_vec),
                    ));
                }
                out.len() >= expected
            },
        );
        out
    }
}

/// Produces records to `topic` and waits for every delivery (usable from a thread).
pub fn produce_to(brokers: &str, topic: &str, records: &[TestRecord]) {
    {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .expect("producer");
        block_on(async {
            let sends = records.iter().map(|(partition, key, value)| {
                let mut record = FutureRecord::<str, [u8]>::to(topic).key(key.as_str());
                if let Some(p) = partition {
                    record = record.partition(*p);
                }
                if let Some(v) = value {
                    record = record.payload(v.as_slice());
                }
                producer.send(record, Duration::from_secs(30))
            });
            for result in futures::future::join_all(sends).await {
                if let Err((error, _)) = result {
                    panic!("record not delivered: {error}");
                }
            }
        });
    }
}

/// A Kafka broker of the test's own (single-node KRaft, the jars `make up` fetched), so a
/// test can stop and start it without disturbing the tests that share the stack's.
pub struct PrivateKafka {
    /// Its bootstrap address.
    pub brokers: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Java with Apache Kafka's own jars (those `make up` fetched) on the class path; its
/// log4j output goes under `logs`.
pub fn kafka_java(logs: &Path) -> Command {
    let libs = std::fs::read_dir(repo().join(".cache"))
        .expect(".cache/ exists: run `make up`")
        .filter_map(Result::ok)
        .map(|e| e.path().join("libs"))
        .find(|libs| libs.is_dir())
        .expect("the Kafka jars under .cache/kafka-*/libs: run `make up`");
    let mut java = Command::new("java");
    java.args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp"])
        .arg(format!("{}/*", libs.display()))
        .arg(format!(
            "-Dlog4j.configuration=file:{}",
            repo().join("scripts/kafka/log4j.properties").display()
        ))
        .arg(format!("-Dkafka.logs.dir={}", logs.display()));
    java
}

impl PrivateKafka {
    pub(super) fn java(&self) -> Command {
        kafka_java(&self.dir.path().join("logs"))
    }

    /// Formats its storage and starts it on free ports.
    pub fn start() -> PrivateKafka {
        let (port, controller) = (free_port(), free_port());
        let dir = tempfile::Builder::new().prefix("eventline-kafka-").tempdir().unwrap();
        let props = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\nlog.dirs={}\n\
             auto.create.topics.enable=false\noffsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("server.properties"), props).unwrap();
        let mut kafka = PrivateKafka { brokers: format!("127.0.0.1:{port}"), dir, child: None };
        let id = kafka.java().args(["kafka.tools.StorageTool", "random-uuid"]).output().unwrap();
        let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
        let props = kafka.dir.path().join("server.properties").display().to_string();
        let out = kafka
            .java()
            .args(["kafka.tools.StorageTool", "format", "-t", &id, "-c", &props])
            .output()
            .unwrap();
        assert!(out.status.success(), "format: {}", String::from_utf8_lossy(&out.stderr));
        kafka.start_again();
        kafka
    }

    /// Starts the stopped broker and waits until it answers.
    pub fn start_again(&mut self) {
        let props = self.dir.path().join("server.properties").display().to_string();
        let log = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        let child = self
            .java()
            .args(["kafka.Kafka", &props])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java runs");
        self.child = Some(child);
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        wait_until("the private broker answers", Duration::from_secs(90), || {
            consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok_and(|m| !m.brokers().is_empty())
        });
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 30 s) and waits until it is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
