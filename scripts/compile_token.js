#!/usr/bin/env node
// Compiles contracts/TestUSDC.sol with the pinned solc-js into contracts_abi/TestUSDC.bytecode.json (ABI, creation
// and runtime bytecode, and the source's SHA-256), so Python never needs a compiler.
//
//   node scripts/compile_token.js           write the artifact
//   node scripts/compile_token.js --check   exit 1 if the checked-in artifact differs from a fresh compile
//   node scripts/compile_token.js --stdout  print the artifact instead of writing it
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const SOURCE_PATH = "contracts/TestUSDC.sol";
const CONTRACT_NAME = "TestUSDC";
const ARTIFACT_PATH = path.join(ROOT, "contracts_abi", "TestUSDC.bytecode.json");
const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function compile() {
  const source = fs.readFileSync(path.join(ROOT, SOURCE_PATH), "utf8");
  const input = { language: "Solidity", sources: { [SOURCE_PATH]: { content: source } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const message of output.errors || []) {
    process.stderr.write(message.formattedMessage || message.message);
  }
  if (errors.length > 0) {
    throw new Error(`${SOURCE_PATH} did not compile`);
  }
  const contract = output.contracts[SOURCE_PATH][CONTRACT_NAME];
  const artifact = {
    contractName: CONTRACT_NAME,
    sourcePath: SOURCE_PATH,
    sourceSha256: crypto.createHash("sha256").update(source, "utf8").digest("hex"),
    compiler: { name: "solc-js", version: solc.version() },
    settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer },
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
    deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
  };
  return JSON.stringify(artifact, null, 2) + "\n";
}

function main(argv) {
  const text = compile();
  if (argv.includes("--stdout")) {
    process.stdout.write(text);
    return 0;
  }
  if (argv.includes("--check")) {
    const current = fs.existsSync(ARTIFACT_PATH) ? fs.readFileSync(ARTIFACT_PATH, "utf8") : "";
    if (current !== text) {
      process.stderr.write(`${path.relative(ROOT, ARTIFACT_PATH)} is out of date: run node scripts/compile_token.js\n`);
      return 1;
    }
    process.stdout.write(`${path.relative(ROOT, ARTIFACT_PATH)} is up to date\n`);
    return 0;
  }
  fs.writeFileSync(ARTIFACT_PATH, text);
  process.stdout.write(`wrote ${path.relative(ROOT, ARTIFACT_PATH)}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
