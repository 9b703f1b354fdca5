package node

import (
	"context"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus series, in its own registry.
type metrics struct {
	n         *Node
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	forwarded prometheus.Counter

	underReplicated, moving                  prometheus.Gauge
	movesStarted, movesFinished, movesFailed prometheus.Counter
	leaderDesc, appliedDesc, membersDesc     *prometheus.Desc
	quietDesc                                *prometheus.Desc
}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		n: n,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringkv_requests_total", Help: "API requests by procedure and result code.",
		}, []string{"procedure", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ringkv_request_duration_seconds", Help: "API request latency by procedure.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"procedure"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringkv_forwarded_requests_total", Help: "Requests this node forwarded to a partition leader or replica.",
		}),
		underReplicated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ringkv_partitions_under_replicated", Help: "Partitions led by this node with fewer than R alive voters.",
		}),
		moving: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ringkv_partitions_moving", Help: "Partitions led by this node whose replicas differ from the desired placement.",
		}),
		movesStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringkv_replica_moves_started_total", Help: "Replica moves this node started (a nonvoter added).",
		}),
		movesFinished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringkv_replica_moves_finished_total", Help: "Replica moves this node finished (a surplus replica removed).",
		}),
		movesFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringkv_replica_move_steps_failed_total", Help: "Configuration steps that failed (retried on the next pass).",
		}),
		leaderDesc:  prometheus.NewDesc("ringkv_partition_leader", "1 if this node leads the partition, else 0.", []string{"partition"}, nil),
		appliedDesc: prometheus.NewDesc("ringkv_partition_applied_index", "Raft index applied to the partition's state machine on this node.", []string{"partition"}, nil),
		membersDesc: prometheus.NewDesc("ringkv_members", "Cluster members by gossip status, as this node sees them.", []string{"status"}, nil),
		quietDesc: prometheus.NewDesc("ringkv_partitions_quiet",
			"Replicas on this node that follow a quiet (idle) group: their leader heartbeats them every quarter to half of --raft-quiesce-timeout.", nil, nil),
	}
	sent := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ringkv_raft_sent_bytes_total", Help: "Bytes sent to Raft peers (appends and snapshots) by every replica on this node.",
	}, func() float64 { return float64(n.sentBytes.Load()) })
	snap := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ringkv_snapshot_sent_bytes_total", Help: "Bytes of Raft snapshots read on this node to be sent to followers that are too far behind (new replicas).",
	}, func() float64 { return float64(n.snapshotBytes.Load()) })
	hbSent := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ringkv_raft_coalesced_sent_total", Help: "Raft heartbeats and small appends this node sent over the shared heartbeat channel (many partitions per frame).",
	}, func() float64 { return float64(n.heartbeats.Stats().Sent) })
	hbFrames := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ringkv_raft_coalesced_frames_total", Help: "Frames that carried them: sent / frames is the mean number of partitions sharing one write.",
	}, func() float64 { return float64(n.heartbeats.Stats().Frames) })
	hbAnswered := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ringkv_raft_coalesced_answered_total", Help: "Raft heartbeats and small appends of peers this node answered over the heartbeat channel.",
	}, func() float64 { return float64(n.heartbeats.Stats().Answered) })
	reg.MustRegister(m.requests, m.latency, m.forwarded, m, sent, snap, hbSent, hbFrames, hbAnswered,
		m.underReplicated, m.moving, m.movesStarted, m.movesFinished, m.movesFailed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Describe and Collect make per-partition gauges that are read at scrape
// time, so they never go stale when replicas come and go.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.leaderDesc
	ch <- m.appliedDesc
	ch <- m.membersDesc
	ch <- m.quietDesc
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	quiet := 0.0
	for _, r := range m.n.localReplicas() {
		if r.Quiescent() {
			quiet++
		}
		pid := strconv.FormatUint(uint64(r.Partition()), 10)
		lead := 0.0
		if r.IsLeader() {
			lead = 1
		}
		ch <- prometheus.MustNewConstMetric(m.leaderDesc, prometheus.GaugeValue, lead, pid)
		ch <- prometheus.MustNewConstMetric(m.appliedDesc, prometheus.GaugeValue, float64(r.AppliedIndex()), pid)
	}
	ch <- prometheus.MustNewConstMetric(m.quietDesc, prometheus.GaugeValue, quiet)
	if m.n.gossip == nil {
		return
	}
	counts := map[string]float64{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, mem := range m.n.gossip.Members() {
		counts[string(mem.Status)]++
	}
	for s, c := range counts {
		ch <- prometheus.MustNewConstMetric(m.membersDesc, prometheus.GaugeValue, c, s)
	}
}

// interceptor counts and times every API call.
func (m *metrics) interceptor() connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			m.observe(req.Spec().Procedure, start, err)
			return resp, err
		}
	})
}

// observe counts and times one API call, whichever protocol carried it.
func (m *metrics) observe(procedure string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	m.requests.WithLabelValues(procedure, code).Inc()
	m.latency.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
}
