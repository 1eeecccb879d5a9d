// Signs in to Trellis over gRPC, lists the workflows and, when TRELLIS_WORKFLOW
// names one, runs it. The client is generated at start from the repository's
// proto/ with @grpc/proto-loader.
//
//   TRELLIS_TARGET    host:port of the gRPC server (default localhost:50051)
//   TRELLIS_USERNAME  default admin
//   TRELLIS_PASSWORD  required
//   TRELLIS_WORKFLOW  a workflow to run (optional)
//   TRELLIS_REPO      the checkout holding proto/ and third_party/ (default ../..)
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const repo = process.env.TRELLIS_REPO || path.resolve(__dirname, "..", "..");
const definition = protoLoader.loadSync(
  ["trellis/v1/auth.proto", "trellis/v1/workflows.proto"],
  {
    // The protos import google/api/annotations.proto and the like, which
    // live in third_party/googleapis: both directories are include paths.
    includeDirs: [path.join(repo, "proto"), path.join(repo, "third_party", "googleapis")],
    keepCase: true, // field names as in proto: run_id, workflow_id
    enums: String,
    longs: String,
    defaults: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).trellis.v1;

// A unary call as a promise, with a deadline.
function call(client, method, request, metadata = new grpc.Metadata()) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    client[method](request, metadata, { deadline }, (err, answer) =>
      err ? reject(err) : resolve(answer),
    );
  });
}

async function main() {
  const target = process.env.TRELLIS_TARGET || "localhost:50051";
  const password = process.env.TRELLIS_PASSWORD;
  if (!password) throw new Error("set TRELLIS_PASSWORD");
  const insecure = grpc.credentials.createInsecure();
  const auth = new v1.AuthService(target, insecure);
  const workflows = new v1.WorkflowService(target, insecure);
  try {
    const { token } = await call(auth, "Login", {
      username: process.env.TRELLIS_USERNAME || "admin",
      password,
    });
    // Every other call carries the access token.
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);

    const listed = await call(workflows, "ListWorkflows", {}, metadata);
    for (const wf of listed.workflows) {
      console.log(`workflow ${wf.id}: ${wf.name}, version ${wf.version}, ${wf.jobs.length} jobs`);
    }
    const workflowId = process.env.TRELLIS_WORKFLOW;
    if (workflowId) {
      const run = await call(workflows, "RunWorkflow", { workflow_id: workflowId }, metadata);
      console.log(`run ${run.run_id} of ${run.workflow_id}: ${run.state}`);
    }
  } finally {
    auth.close();
    workflows.close();
  }
}

main().catch((err) => {
  // A gRPC error has a status code name and the server's message.
  const status = err.code === undefined ? "" : `${grpc.status[err.code]}: `;
  console.error(`error: ${status}${err.details || err.message}`);
  process.exit(1);
});
