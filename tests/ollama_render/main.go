// Renders Ollama TEMPLATEs with Go's own text/template, the engine Ollama uses, handing the template
// what Ollama's template.Execute hands it on its messages path: .System (the system messages joined
// by a blank line) and .Messages (consecutive messages of one role merged, system messages kept).
//
// stdin: {"template": "...", "conversations": [[{"role": "...", "content": "..."}, ...], ...]}
// stdout: a JSON list with one rendered string per conversation.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Input struct {
	Template      string      `json:"template"`
	Conversations [][]Message `json:"conversations"`
}

// collate follows ollama/template/template.go.
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			m := msgs[i]
			collated = append(collated, &m)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Parse(in.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "template does not parse:", err)
		os.Exit(1)
	}
	out := []string{}
	for _, conversation := range in.Conversations {
		system, messages := collate(conversation)
		var b bytes.Buffer
		if err := tmpl.Execute(&b, map[string]any{"System": system, "Messages": messages}); err != nil {
			fmt.Fprintln(os.Stderr, "template does not execute:", err)
			os.Exit(1)
		}
		out = append(out, b.String())
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
