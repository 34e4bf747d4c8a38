// memberlist-peer: one hashicorp memberlist member with DefaultLANConfig,
// for the bench crate's `peer` scenario (docs/performance.md). It prints
// one line per membership change on stdout, which the bench timestamps:
//
//	ready             created and (when -join is given) joined
//	join NAME         NAME became a member (this member included)
//	left NAME         NAME left or was declared dead
//
// Built offline against Debian's packaged source:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o memberlist-peer main.go
package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

type events struct{}

func (events) NotifyJoin(n *memberlist.Node)   { fmt.Printf("join %s\n", n.Name) }
func (events) NotifyLeave(n *memberlist.Node)  { fmt.Printf("left %s\n", n.Name) }
func (events) NotifyUpdate(n *memberlist.Node) {}

func main() {
	name := flag.String("name", "", "this member's name")
	bind := flag.String("bind", "127.0.0.1", "address to bind and advertise")
	port := flag.Int("port", 7946, "TCP and UDP port")
	join := flag.String("join", "", "comma-separated host:port of members to join")
	key := flag.String("key", "", "hex AES key (16, 24 or 32 bytes) sealing all traffic, as gossip's cluster key does")
	flag.Parse()
	if *name == "" {
		fmt.Fprintln(os.Stderr, "memberlist-peer: -name is required")
		os.Exit(2)
	}
	config := memberlist.DefaultLANConfig()
	config.Name = *name
	config.BindAddr = *bind
	config.BindPort = *port
	config.AdvertiseAddr = *bind
	config.AdvertisePort = *port
	config.Events = events{}
	config.LogOutput = io.Discard
	if os.Getenv("MEMBERLIST_PEER_LOG") != "" {
		config.LogOutput = os.Stderr
	}
	if *key != "" {
		secret, err := hex.DecodeString(*key)
		if err != nil {
			log.Fatalf("memberlist-peer: -key is not hex: %v", err)
		}
		config.SecretKey = secret
	}
	list, err := memberlist.Create(config)
	if err != nil {
		log.Fatalf("memberlist-peer: cannot start %s on %s:%d: %v", *name, *bind, *port, err)
	}
	if *join != "" {
		// Members start together: the one to join may not listen yet.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := list.Join(strings.Split(*join, ",")); err == nil {
				break
			} else if time.Now().After(deadline) {
				log.Fatalf("memberlist-peer: %s could not join %s within 30 s: %v", *name, *join, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Println("ready")
	select {}
}
