#!/bin/sh
# Writes starting inputs into corpus/<target>/ (ignored by git): real
# configurations for yaml_reader, and a well-formed check-in envelope and
# transfer order with two chunks for the others, which random mutation alone
# reaches slowly. Run from fuzz/.
set -eu
mkdir -p corpus/yaml_reader corpus/checkin_decode corpus/swarm_framing
cp ../examples/modules/*.yaml corpus/yaml_reader/

# Signed { body: CheckInBody { envoy: "web-01", traits_digest: "ab", traits_json: "{}" },
#          timestamp: 1800000000, nonce: 32 hex digits, signature: "AAAA" }
body='\012\006web-01\022\002ab\032\002{}'
printf "\012\020${body}\020\200\244\247\332\006\032\040%s\042\004AAAA" 00112233445566778899aabbccddeeff \
    > corpus/checkin_decode/seed-checkin

# swarm_framing: u16 length, order JSON, FetchRequest { offset: 0 }, then two
# chunks ("hello" at 0, "world" at 5) whose sha256 is the marker byte 0.
order='{"id":"o1","kind":"vigosync","user":"alice","name":"notes.txt","sha256":"936a185caaa266bb9cbe981e9e05cb78cd732b0b3280eb944412bb6f8f8f07af","size":10,"mtime":1700000000000000000,"source":"h1","source_addr":"198.18.0.2:1531","target":"h2","source_cert":"abababababababababababababababababababababababababababababababab","target_cert":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","expires_at":4000000000}'
len=$(printf %s "$order" | wc -c)
{
    printf "\\$(printf %03o $((len % 256)))\\$(printf %03o $((len / 256)))"
    printf %s "$order"
    printf '\002\030\000'
    printf '\014\010\000\022\005hello\032\001\000'
    printf '\014\010\005\022\005world\032\001\000'
} > corpus/swarm_framing/seed-order
