/**
 * ad-inspect Anomaly Studio for JupyterLab: a Launcher card and a command-palette command that
 * open a new notebook whose first cell builds the studio (ipywidgets panels from `jupyter_ext`)
 * and run it, so the panels are ready when the notebook appears.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

export const COMMAND = 'ad-inspect:open-studio';
export const STUDIO_CODE = [
  'from jupyter_ext import AnomalyStudio',
  '',
  '# data/ and models/ are relative to this notebook; change them here if yours live elsewhere',
  "studio = AnomalyStudio(data_root='data', models_root='models')",
  'studio'
].join('\n');

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
  '<rect x="3" y="3" width="18" height="18" rx="2" fill="none" stroke="#616161" stroke-width="2"/>' +
  '<circle cx="15" cy="9" r="3" fill="#d32f2f"/>' +
  '<path d="M5 17l4-5 3 3 2-2 5 4z"/></g></svg>';

export const studioIcon = new LabIcon({ name: 'ad-inspect:studio', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ad-inspect-studio:plugin',
  description: 'Open the ad-inspect Anomaly Studio in a new notebook',
  autoStart: true,
  optional: [ILauncher, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null
  ) => {
    app.commands.addCommand(COMMAND, {
      label: args => (args['isPalette'] ? 'Open Anomaly Studio (ad-inspect)' : 'Anomaly Studio'),
      caption: 'New notebook with the ad-inspect panels: data, train, tune, threshold, export',
      icon: args => (args['isPalette'] ? undefined : studioIcon),
      execute: async args => {
        const cwd = (args['cwd'] as string) || '';
        const panel = (await app.commands.execute('notebook:create-new', {
          cwd,
          kernelName: 'python3'
        })) as NotebookPanel;
        await panel.context.ready;
        await panel.sessionContext.ready;
        const notebook = panel.content;
        const cell = notebook.model?.cells.get(0);
        if (cell) {
          cell.sharedModel.setSource(STUDIO_CODE);
        }
        notebook.activeCellIndex = 0;
        await NotebookActions.run(notebook, panel.sessionContext);
        return panel;
      }
    });
    if (launcher) {
      launcher.add({ command: COMMAND, category: 'Notebook', rank: 10 });
    }
    if (palette) {
      palette.addItem({ command: COMMAND, category: 'ad-inspect', args: { isPalette: true } });
    }
  }
};

export default plugin;
