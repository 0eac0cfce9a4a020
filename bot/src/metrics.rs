//! Prometheus metrics for `/metrics`: messages in and out per platform, handler latency,
//! outbox depth and lanes.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The process's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    handler_seconds: HistogramVec,
    outbox_depth: IntGauge,
    outbox_lanes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new(
                "segue_messages_total",
                "Messages by platform, direction and status",
            ),
            &["platform", "direction", "status"],
        )
        .expect("valid metric");
        let handler_seconds = HistogramVec::new(
            HistogramOpts::new(
                "segue_handler_seconds",
                "Time from receiving a message to its replies being recorded",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["command"],
        )
        .expect("valid metric");
        let outbox_depth = IntGauge::new(
            "segue_outbox_depth",
            "Outbound messages not yet delivered (pending or held)",
        )
        .expect("valid metric");
        let outbox_lanes = IntCounterVec::new(
            Opts::new(
                "segue_outbox_lane_total",
                "Outbound messages taken for delivery, by how the worker got them: handed \
                 over in memory (fast) or found by a scan of the table (table)",
            ),
            &["lane"],
        )
        .expect("valid metric");
        for c in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(handler_seconds.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(outbox_lanes.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            messages,
            handler_seconds,
            outbox_depth,
            outbox_lanes,
        }
    }

    /// Outbound messages the delivery worker took from a lane (`fast` or `table`).
    pub fn outbox_lane(&self, lane: &str, n: usize) {
        if n > 0 {
            self.outbox_lanes
                .with_label_values(&[lane])
                .inc_by(n as u64);
        }
    }

    pub fn message(&self, platform: &str, inbound: bool, status: &str) {
        self.messages
            .with_label_values(&[platform, if inbound { "in" } else { "out" }, status])
            .inc();
    }

    pub fn handled(&self, command: &str, seconds: f64) {
        self.handler_seconds
            .with_label_values(&[command])
            .observe(seconds);
    }

    /// The text exposition, with the outbox depth read just before.
    pub fn render(&self, outbox_depth: u64) -> String {
        self.outbox_depth
            .set(i64::try_from(outbox_depth).unwrap_or(i64::MAX));
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
