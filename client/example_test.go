package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/ringkv/ringkv/client"
)

// This example needs a running cluster (`make run`), so it has no output
// to check.
func Example() {
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{"127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"}
	c, err := client.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	version, err := c.Put(ctx, []byte("greeting"), []byte("hello"))
	switch {
	case errors.Is(err, client.ErrOutcomeUnknown):
		// The write may or may not have happened: read to find out.
		log.Printf("put: %v", err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("written at version", version)

	kv, err := c.Get(ctx, []byte("greeting"), client.WithConsistency(client.Eventual))
	if errors.Is(err, client.ErrNotFound) {
		fmt.Println("not there (yet)")
		return
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (version %d, served by %s, leader %v)\n", kv.Value, kv.Version, kv.Receipt.ServedBy, kv.Receipt.Leader)

	res, err := c.CompareAndSwap(ctx, []byte("greeting"), client.IfVersion(kv.Version), []byte("hi"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("swapped:", res.Succeeded)
}
