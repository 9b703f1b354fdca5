package history

// Removal records one remove-while-isolated fault of the membership nemesis
// (membership.json in the run folder): a node cut off, removed through the
// majority, its replicas replaced, then healed. Times are nanoseconds since
// the run started; 0 means the step did not happen.
type Removal struct {
	// Node is the removed node.
	Node string `json:"node"`
	// Partitions are the partitions whose configuration listed Node when it
	// was cut off; Keys holds one probe key per partition, written before
	// the cut (and read back from Node's own replica), then again while
	// Node was away.
	Partitions []int          `json:"partitions"`
	Keys       map[int]string `json:"keys"`
	Isolated   int64          `json:"isolated"`
	Removed    int64          `json:"removed"`
	// Replaced: every partition's leader reported a configuration without
	// Node and with R voters.
	Replaced int64 `json:"replaced"`
	Healed   int64 `json:"healed"`
	// Dropped is, per partition, the return time of the first poll of
	// Node's own replicas (Partitions, local only) that no longer listed
	// it: from then on Node knows it was removed, and a read it answers
	// from its own replica of that partition must not be stale.
	Dropped map[int]int64 `json:"dropped"`
	// Restarted is when Node was restarted (gracefully) after dropping its
	// copies; Rehosted lists the partitions it hosted again afterwards,
	// first seen at RehostedAt (a node that did not record its own removal
	// may host replicas again, and a member that did not record it may add
	// it back: from then on its reads are an ordinary replica's).
	Restarted  int64 `json:"restarted,omitempty"`
	Rehosted   []int `json:"rehosted,omitempty"`
	RehostedAt int64 `json:"rehosted_at,omitempty"`
	// End is when the nemesis stopped watching Node. The checker judges
	// Node's reads between Dropped and RehostedAt, or End.
	End int64 `json:"end"`
	// ReadsBefore counts the probe reads Node answered from its own
	// replica after the heal and before it dropped it, and StaleBefore how
	// many of them were stale (eventual reads may be; a measure).
	ReadsBefore int `json:"reads_before_drop"`
	StaleBefore int `json:"stale_before_drop"`
	// ReadsAfter counts the probe reads through Node after it dropped its
	// copies (the checker judges them from the history).
	ReadsAfter int    `json:"reads_after_drop"`
	Err        string `json:"err,omitempty"`
}

// MemberAction is one step of the membership nemesis: add, drain, undrain
// or remove, with what it did.
type MemberAction struct {
	Action string `json:"action"`
	Node   string `json:"node"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	Detail string `json:"detail,omitempty"`
	Err    string `json:"err,omitempty"`
}

// Membership is the membership nemesis's record of a run (membership.json).
type Membership struct {
	Actions  []MemberAction `json:"actions"`
	Removals []Removal      `json:"removals"`
}
