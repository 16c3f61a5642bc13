import { Body, Controller, HttpCode, Param, Post, UseGuards } from '@nestjs/common';
import {
  ApiBearerAuth,
  ApiBody,
  ApiCreatedResponse,
  ApiOkResponse,
  ApiOperation,
  ApiParam,
  ApiTags,
} from '@nestjs/swagger';
import type { HeadManifest } from '../../gim/store/head-manifest.js';
import { AdminTokenGuard } from '../admin/admin-token.guard.js';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { ClientSignal } from '../http/client-signal.decorator.js';
import { JsonBody } from '../http/json-body.decorator.js';
import { ClassifierTrainer, type ProbeReport } from './classifier-trainer.js';
import {
  HeadManifestDto,
  ProbeBodyDto,
  ProbeReportDto,
  TrainHeadBodyDto,
} from './classifiers.dto.js';
import { commandArgs, PROBE_BODY, TRAIN_HEAD_BODY } from './train-head-request.js';

@ApiTags('admin')
@ApiBearerAuth()
@Controller('admin/v1/models/:name')
@UseGuards(AdminTokenGuard)
export class AdminClassifiersController {
  constructor(private readonly trainer: ClassifierTrainer) {}

  @Post('classifiers')
  @ApiOperation({
    summary: 'Train and publish a head (synchronous: small data only)',
    description:
      'Runs `gim classifier train ... --json` in a child process on data on the server and ' +
      'answers with the published manifest once it is done: the request stays open for the whole ' +
      'training (at most 15 minutes, then a 504), so use it for small data only until the ' +
      'admin jobs API lands; closing the connection stops the training. One training at a time ' +
      '(409 meanwhile). Needs `Authorization: Bearer <ADMIN_TOKEN>`; without ADMIN_TOKEN set ' +
      'on the server, admin routes answer 404.',
  })
  @ApiParam({ name: 'name', description: 'Stack name', example: 'fashion-gim' })
  @JsonBody()
  @ApiBody({ type: TrainHeadBodyDto })
  @ApiCreatedResponse({ type: HeadManifestDto, description: 'The published head manifest' })
  @ApiErrors(400, 401, 404, 409, 413, 415, 422, 499, 504)
  train(
    @Param('name') name: string,
    @Body() body: unknown,
    @ClientSignal() signal: AbortSignal,
  ): Promise<HeadManifest> {
    return this.trainer.train(commandArgs(TRAIN_HEAD_BODY, name, body), signal);
  }

  @Post('probe')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Layer sweep: a linear probe per layer and pooling (synchronous: small data only)',
    description:
      'Runs `gim probe ... --json` in a child process: fits one softmax probe per (layer, ' +
      'pooling) on frozen embeddings of the labelled data on the server and scores it on ' +
      '`test_data` (or a stratified split; audio: held-out utterances per speaker), answering ' +
      'the accuracy per layer and the best layer. Synchronous like head training (at most 15 ' +
      'minutes, one admin job at a time, 409 meanwhile); needs the admin bearer token.',
  })
  @ApiParam({ name: 'name', description: 'Stack name', example: 'fashion-gim' })
  @JsonBody()
  @ApiBody({ type: ProbeBodyDto })
  @ApiOkResponse({
    type: ProbeReportDto,
    description: 'Accuracy per layer and pooling, and the best',
  })
  @ApiErrors(400, 401, 404, 409, 413, 415, 422, 499, 504)
  probe(
    @Param('name') name: string,
    @Body() body: unknown,
    @ClientSignal() signal: AbortSignal,
  ): Promise<ProbeReport> {
    return this.trainer.probe(commandArgs(PROBE_BODY, name, body), signal);
  }
}
