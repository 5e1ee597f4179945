// Reads {secret, headers, body} as JSON on stdin; prints the verified event as JSON, or exits 1.
import { Webhook } from "standardwebhooks";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { secret, headers, body } = JSON.parse(input);
try {
  const event = new Webhook(secret).verify(body, headers);
  console.log(JSON.stringify(event));
} catch (err) {
  console.error(String(err));
  process.exit(1);
}
